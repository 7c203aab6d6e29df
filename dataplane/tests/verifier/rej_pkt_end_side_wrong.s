; data_end > data + 14 is known false on the fall-through
; expect: reject "invalid access to packet"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 14
if r3 > r4 goto drop
r0 = *(u8 *)(r2 + 0)
exit
drop:
r0 = 1
exit
