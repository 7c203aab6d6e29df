; a chain of diamonds writing dead registers: pruning keeps it small
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 16
if r4 > r3 goto out
r5 = *(u8 *)(r2 + 0)
if r5 > 10 goto a1
r6 = 1
goto b1
a1:
r6 = 2
b1:
r5 = *(u8 *)(r2 + 1)
if r5 > 10 goto a2
r6 = 3
goto b2
a2:
r6 = 4
b2:
r5 = *(u8 *)(r2 + 2)
if r5 > 10 goto a3
r6 = 5
goto b3
a3:
r6 = 6
b3:
r5 = *(u8 *)(r2 + 3)
if r5 > 10 goto a4
r6 = 7
goto b4
a4:
r6 = 8
b4:
r0 = *(u8 *)(r2 + 15)
out:
r0 = 2
exit
