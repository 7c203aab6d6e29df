; global data through a map_value reference
; expect: accept
; maps: array 4 16 1 ro
r1 = map_value[0] + 4 ll
r0 = *(u32 *)(r1 + 0)
r1 = map_value[0] ll
r2 = *(u64 *)(r1 + 8)
r0 += r2
exit
