; data + 8 <= data_end on the taken edge: 8 bytes
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 8
if r4 <= r3 goto ok
r0 = 1
exit
ok:
r0 = *(u64 *)(r2 + 0)
exit
