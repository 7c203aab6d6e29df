; data + 14 > data_end on the taken edge: the fall-through may read 14 bytes
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 14
if r4 > r3 goto drop
r0 = *(u16 *)(r2 + 12)
r0 &= 1
r0 += 1
exit
drop:
r0 = 1
exit
