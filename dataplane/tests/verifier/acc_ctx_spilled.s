; the ctx pointer spilled across a helper call
; expect: accept
*(u64 *)(r10 - 8) = r1
call 5
r1 = *(u64 *)(r10 - 8)
r2 = *(u32 *)(r1 + 0)
r3 = *(u32 *)(r1 + 4)
r0 = 2
exit
