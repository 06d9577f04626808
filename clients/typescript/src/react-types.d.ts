// The two React hooks the binding uses, so the package builds without React
// installed; an application's own React types take their place.
declare module "react" {
  export function useState<T>(initial: T): [T, (value: T) => void];
  export function useEffect(effect: () => void | (() => void), deps: readonly unknown[]): void;
}
