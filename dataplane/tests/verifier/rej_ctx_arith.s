; arithmetic on the ctx pointer
; expect: reject "arithmetic on the ctx pointer"
r1 += 4
r0 = 2
exit
