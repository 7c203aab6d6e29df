; data_end <= data + 14 false: 15 bytes on the fall-through
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 14
if r3 <= r4 goto drop
r0 = *(u8 *)(r2 + 14)
exit
drop:
r0 = 1
exit
