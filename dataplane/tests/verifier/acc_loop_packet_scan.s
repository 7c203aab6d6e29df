; a loop scanning up to 16 packet bytes, checking each
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r0 = 0
r5 = 0
loop:
r4 = r2
r4 += r5
r6 = r4
r6 += 1
if r6 > r3 goto out
r7 = *(u8 *)(r4 + 0)
r0 += r7
r5 += 1
if r5 < 16 goto loop
out:
r0 &= 3
exit
