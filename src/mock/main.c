#include "ringway/mock.h"

int main(int argc, char **argv) { return mock_main(argc, argv); }
