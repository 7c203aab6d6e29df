; a bounded loop: the counter is constant on every iteration
; expect: accept
r1 = 0
r0 = 0
loop:
r0 += r1
r1 += 1
if r1 < 10 goto loop
exit
