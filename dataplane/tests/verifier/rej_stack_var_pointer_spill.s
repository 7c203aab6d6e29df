; a pointer written at a variable stack offset
; expect: reject "variable stack offset"
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
*(u64 *)(r6 + 0) = r2
drop:
r0 = 1
exit
