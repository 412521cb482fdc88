// Runs the shared router suite against the in-process router.
import { LocalRouter } from './router.js';
import { routerSuite, type TestConn } from './router-suite.js';

// The local router is a one-node bus: its "peer" on the same bus is itself.
routerSuite('local', (deliver) => new LocalRouter<TestConn>(deliver), { peer: (first) => first });
