; calls three frames deep, each with its own stack
; expect: accept
r1 = 1
call f1
exit
f1:
*(u64 *)(r10 - 8) = r1
call f2
r1 = *(u64 *)(r10 - 8)
r0 += r1
exit
f2:
r6 = 5
*(u64 *)(r10 - 8) = r6
call f3
r6 = *(u64 *)(r10 - 8)
r0 += r6
exit
f3:
r0 = 1
exit
