; a reference to a map the program does not have
; expect: reject "map index 3 does not exist"
; maps: hash 4 8 16
r1 = map[3] ll
r0 = 2
exit
