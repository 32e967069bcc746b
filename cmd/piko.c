/* piko: one binary, Piko's subcommands. (stub, replaced shortly) */
#include <stdio.h>
int main(void)
{
	puts("piko");
	return 0;
}
