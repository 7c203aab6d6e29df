; code after exit that no jump reaches
; expect: reject "unreachable insn 2"
r0 = 2
exit
r0 = 1
exit
