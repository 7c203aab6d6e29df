; signed checks bound an offset from both sides
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 40
if r4 > r3 goto out
r5 = *(s8 *)(r2 + 0)
if r5 s< 0 goto out
if r5 s> 20 goto out
r6 = r2
r6 += r5
r0 = *(u8 *)(r6 + 19)
out:
r0 = 2
exit
