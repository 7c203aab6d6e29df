; a jump to itself
; expect: reject "infinite loop detected"
r0 = 2
loop:
goto loop
