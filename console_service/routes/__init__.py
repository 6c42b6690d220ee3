"""The console's pages, one module per thing an operator looks at."""
