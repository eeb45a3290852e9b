/* ringway-mock, the OpenAI-compatible upstream used by tests and benchmarks. */
#ifndef RINGWAY_MOCK_H
#define RINGWAY_MOCK_H

/* Parses the command line, starts the worker threads and serves until
 * SIGINT or SIGTERM. Returns the process exit status. */
int mock_main(int argc, char **argv);

#endif
