; arithmetic on a map pointer
; expect: reject "pointer arithmetic on map_ptr prohibited"
; maps: hash 4 8 16
r1 = map[0] ll
r1 += 8
r0 = 2
exit
