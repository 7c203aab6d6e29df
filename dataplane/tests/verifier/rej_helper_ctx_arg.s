; xdp_adjust_head needs the ctx pointer
; expect: reject "expected the ctx pointer"
r1 = r10
r2 = 4
call 44
r0 = 2
exit
