; strict division by a register that may be 0
; expect: reject "division by zero: R5 may be 0"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
; strict_div
r4 = r2
r4 += 1
if r4 > r3 goto out
r5 = *(u8 *)(r2 + 0)
r0 = 100
r0 /= r5
exit
out:
r0 = 2
exit
