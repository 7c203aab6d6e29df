; one path checked, the other not: the join is unchecked
; expect: reject "invalid access to packet"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r5 = *(u32 *)(r1 + 12)
if r5 == 1 goto skip
r4 = r2
r4 += 8
if r4 > r3 goto drop
skip:
r0 = *(u8 *)(r2 + 0)
exit
drop:
r0 = 1
exit
