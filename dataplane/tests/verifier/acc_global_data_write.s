; writable global data (.bss)
; expect: accept
; maps: array 4 8 1
r1 = map_value[0] ll
r2 = *(u64 *)(r1 + 0)
r2 += 1
*(u64 *)(r1 + 0) = r2
r0 = 2
exit
