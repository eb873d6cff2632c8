from ocdl.cli import main

raise SystemExit(main())
