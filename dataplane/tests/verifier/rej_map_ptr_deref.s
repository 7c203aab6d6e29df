; a load through a map pointer
; expect: reject "invalid mem access 'map_ptr'"
; maps: hash 4 8 16
r1 = map[0] ll
r0 = *(u32 *)(r1 + 0)
exit
