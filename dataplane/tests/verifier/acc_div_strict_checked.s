; strict division after proving the divisor non-zero
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
; strict_div
r4 = r2
r4 += 1
if r4 > r3 goto out
r5 = *(u8 *)(r2 + 0)
if r5 == 0 goto out
r0 = 100
r0 /= r5
exit
out:
r0 = 2
exit
