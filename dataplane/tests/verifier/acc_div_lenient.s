; division by a possibly-zero register is defined (x/0 = 0) when not strict
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 1
if r4 > r3 goto out
r5 = *(u8 *)(r2 + 0)
r0 = 100
r0 /= r5
r0 %= r5
out:
r0 = 2
exit
