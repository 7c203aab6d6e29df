; a store into .rodata
; expect: reject "read-only map 0"
; maps: array 4 8 1 ro
r1 = map_value[0] ll
*(u32 *)(r1 + 0) = 1
r0 = 2
exit
