; redirect_map through a devmap
; expect: accept
; maps: devmap 4 4 8
r1 = map[0] ll
r2 = 1
r3 = 0
call 51
exit
