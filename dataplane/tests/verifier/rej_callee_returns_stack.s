; a callee returning its own stack address
; expect: reject "would dangle"
call f
r0 = 2
exit
f:
r0 = r10
r0 += -8
exit
