; a scalar written at a variable offset inside initialised stack
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
*(u64 *)(r10 - 16) = 0
r4 = r2
r4 += 1
if r4 > r3 goto drop
r5 = *(u8 *)(r2 + 0)
r5 &= 7
r6 = r10
r6 += -16
r6 += r5
*(u8 *)(r6 + 0) = 9
r0 = *(u64 *)(r10 - 16)
exit
drop:
r0 = 1
exit
