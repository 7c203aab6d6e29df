; data + 14 >= data_end false means 15 bytes are present
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 14
if r4 >= r3 goto drop
r0 = *(u8 *)(r2 + 14)
exit
drop:
r0 = 1
exit
