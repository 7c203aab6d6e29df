; data_end > data + 14 taken: 15 bytes
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 14
if r3 > r4 goto ok
r0 = 1
exit
ok:
r0 = *(u8 *)(r2 + 14)
exit
