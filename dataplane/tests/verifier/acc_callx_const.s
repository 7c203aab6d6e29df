; callx through a register holding a known helper id
; expect: accept
r2 = 5
callx r2
r0 = 2
exit
