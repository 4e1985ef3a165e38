from clickedge.cli import main

raise SystemExit(main())
