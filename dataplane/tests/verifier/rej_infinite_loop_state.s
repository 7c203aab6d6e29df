; a loop whose state never changes
; expect: reject "infinite loop detected"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 1
if r4 > r3 goto out
r5 = *(u8 *)(r2 + 0)
loop:
r5 |= 1
if r5 != 0 goto loop
out:
r0 = 2
exit
