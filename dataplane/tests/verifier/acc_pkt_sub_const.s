; moving a checked pointer back stays within the checked range
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 20
if r4 > r3 goto out
r4 -= 6
r0 = *(u16 *)(r4 + 0)
out:
r0 = 2
exit
