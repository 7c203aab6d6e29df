; a function calling itself
; expect: reject "recursion is not allowed"
call f
exit
f:
call f
exit
