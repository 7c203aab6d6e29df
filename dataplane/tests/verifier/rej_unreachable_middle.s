; an instruction jumped over on every path
; expect: reject "unreachable insn 2"
r0 = 2
goto +1
r0 = 1
exit
