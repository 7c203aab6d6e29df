; a pointer where a scalar belongs
; expect: reject "helper redirect arg1 (R1): expected a scalar"
r2 = 0
call 23
exit
