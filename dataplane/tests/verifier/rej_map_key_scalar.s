; a number where the key pointer belongs
; expect: reject "helper map_lookup_elem arg2"
; maps: hash 4 8 16
r2 = 4
r1 = map[0] ll
call 1
r0 = 2
exit
