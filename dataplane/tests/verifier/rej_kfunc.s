; a kfunc call
; expect: reject "kfunc calls"
call kfunc 5
r0 = 2
exit
