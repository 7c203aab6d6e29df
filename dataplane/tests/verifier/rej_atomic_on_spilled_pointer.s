; an atomic add onto a spilled pointer
; expect: reject "atomic operation on a spilled"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
*(u64 *)(r10 - 8) = r2
r4 = 1
lock *(u64 *)(r10 - 8) += r4
r0 = 2
exit
