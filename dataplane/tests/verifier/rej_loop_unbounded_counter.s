; a counter that only stops on wrapping around
; expect: reject "too complex"
; max_insns: 100000
r1 = 0
loop:
r1 += 1
if r1 != 0 goto loop
r0 = 2
exit
