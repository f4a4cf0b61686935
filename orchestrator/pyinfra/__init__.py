"""The pyinfra glue: the deploy runner (pyinfra's API), loading a deploy by its
``package.module:function`` name, and the ``@orchdocker`` connector."""
