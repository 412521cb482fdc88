// Runs the shared router suite against the in-process router.
import { LocalRouter } from './router.js';
import { routerSuite, type TestConn } from './router-suite.js';

routerSuite('local', (deliver) => new LocalRouter<TestConn>(deliver));
