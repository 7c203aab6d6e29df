; jmp32 comparisons
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 4
if r4 > r3 goto out
r5 = *(u32 *)(r2 + 0)
if w5 > 100 goto out
if w5 s< 3 goto out
r0 = 2
exit
out:
r0 = 1
exit
