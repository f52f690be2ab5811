// GraphiQL on this API, from the embedded bundle. When the console holds a
// session in this tab, its token goes with every request, so a speaker can
// explore with their own rights without pasting it again.
import { currentSession } from './session.js';

const session = currentSession();
const auth = session ? { Authorization: `Bearer ${session.token}` } : {};
const wsScheme = location.protocol === 'https:' ? 'wss:' : 'ws:';

document.body.style.margin = '0';
const root = document.getElementById('graphiql');
root.style.height = '100vh';

const fetcher = GraphiQL.createFetcher({
  url: '/graphql',
  subscriptionUrl: `${wsScheme}//${location.host}/graphql`,
  headers: auth,
  wsConnectionParams: auth,
});

ReactDOM.createRoot(root).render(
  React.createElement(GraphiQL, {
    fetcher,
    defaultEditorToolsVisibility: true,
    defaultQuery: '# Signed in through /console/? Your token is sent with every request.\n# Otherwise add {"Authorization": "Bearer <token>"} under Headers.\n{\n  me { sub role namespaces }\n}\n',
  }),
);
