; byte-swapping a loaded field
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 14
if r4 > r3 goto out
r0 = *(u16 *)(r2 + 12)
r0 = be16 r0
if r0 != 0x800 goto out
r0 = 1
exit
out:
r0 = 2
exit
