; data_meta equals data in sluice and can be bounds-checked like it
; expect: accept
r2 = *(u32 *)(r1 + 8)
r3 = *(u32 *)(r1 + 4)
r4 = r2
r4 += 2
if r4 > r3 goto out
r0 = *(u16 *)(r2 + 0)
out:
r0 = 2
exit
