; a packet pointer stored into global data
; expect: reject "leaks addr into map value"
; maps: array 4 8 1
r2 = *(u32 *)(r1 + 0)
r3 = map_value[0] ll
*(u64 *)(r3 + 0) = r2
r0 = 2
exit
