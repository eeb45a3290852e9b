#include <stdio.h>
int main(void) { puts("ringway"); return 0; }
