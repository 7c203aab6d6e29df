; a pointer spilled and filled keeps its type
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
*(u64 *)(r10 - 8) = r2
*(u64 *)(r10 - 16) = r3
r4 = *(u64 *)(r10 - 8)
r5 = *(u64 *)(r10 - 16)
r6 = r4
r6 += 2
if r6 > r5 goto drop
r0 = *(u16 *)(r4 + 0)
exit
drop:
r0 = 1
exit
