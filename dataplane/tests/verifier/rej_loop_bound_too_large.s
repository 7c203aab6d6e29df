; a bound the complexity limit cannot reach
; expect: reject "too complex"
; max_insns: 100000
r1 = 0
loop:
r1 += 1
if r1 < 1000000 goto loop
r0 = 2
exit
