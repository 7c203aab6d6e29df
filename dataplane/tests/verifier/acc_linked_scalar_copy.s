; a copy of a scalar learns the bound checked on the original
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
*(u64 *)(r10 - 16) = 0
*(u64 *)(r10 - 8) = 0
r4 = r2
r4 += 1
if r4 > r3 goto out
r5 = *(u8 *)(r2 + 0)
r6 = r5
if r5 > 15 goto out
r7 = r10
r7 += -16
r7 += r6
r0 = *(u8 *)(r7 + 0)
exit
out:
r0 = 2
exit
